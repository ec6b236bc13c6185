// input: {"text": "2024-01-05 and 2025-12-31; price $42"}
// expect: {"years": ["2024", "2025"], "first": {"y": "2024", "m": "01"}, "price": "42", "replaced": "2024/01/05 and 2025/12/31; price $42", "dotAll": true, "sticky": 4}
const re = /(?<y>\d{4})-(?<m>\d{2})-(?<d>\d{2})/g;
const years = [...input.text.matchAll(re)].map((m) => m.groups.y);
const { y, m } = input.text.match(/(?<y>\d{4})-(?<m>\d{2})/).groups;
const price = input.text.match(/(?<=\$)\d+/)[0];
const replaced = input.text.replaceAll(re, "$<y>/$<m>/$<d>");
const sticky = /\d+/y;
sticky.lastIndex = 0;
sticky.exec("2024-");
return { years, first: { y, m }, price, replaced, dotAll: /a.b/s.test("a\nb"), sticky: sticky.lastIndex };

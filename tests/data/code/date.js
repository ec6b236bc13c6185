// input: {"iso": "2024-02-28T12:00:00.000Z"}
// expect: {"next": "2024-02-29T12:00:00.000Z", "year": 2024, "utc": 946684800000, "asJson": "2000-01-01T00:00:00.000Z", "nowIsRecent": true}
const d = new Date(input.iso);
d.setUTCDate(d.getUTCDate() + 1);
return {
  next: d.toISOString(),
  year: d.getUTCFullYear(),
  utc: Date.UTC(2000, 0, 1),
  asJson: new Date(Date.UTC(2000, 0, 1)),
  nowIsRecent: Date.now() > Date.UTC(2024, 0, 1),
};

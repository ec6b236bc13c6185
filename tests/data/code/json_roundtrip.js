// input: {"text": "{\"k\":[1,2,{\"z\":null}],\"s\":\"é\\u00e9\"}"}
// expect: {"parsed": {"k": [1, 2, {"z": null}], "s": "éé"}, "again": "{\"k\":[1,2,{\"z\":null}],\"s\":\"éé\"}", "pretty": "{\n  \"a\": 1\n}"}
const parsed = JSON.parse(input.text);
return { parsed, again: JSON.stringify(parsed), pretty: JSON.stringify({ a: 1 }, null, 2) };

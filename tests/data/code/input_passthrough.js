// input: {"nested": {"list": [1, "two", null, true, {"deep": [3.5]}]}, "empty": {}, "unicode": "日本"}
// expect: {"nested": {"list": [1, "two", null, true, {"deep": [3.5]}]}, "empty": {}, "unicode": "日本"}
return input;

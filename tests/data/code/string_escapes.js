// expect: {"s": "quote\" backslash\\ nl\n tab\t ctl\u0001 é ☃ 😀", "lone": "a\ufffdb", "key\"q": 1}
return { s: "quote\" backslash\\ nl\n tab\t ctl\u0001 é ☃ 😀", lone: "a\ud800b", 'key"q': 1 };

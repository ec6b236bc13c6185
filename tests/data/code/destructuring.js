// input: {"user": {"name": "Ada", "langs": ["en", "fr", "de"]}}
// expect: {"name": "Ada", "first": "en", "others": ["fr", "de"], "age": 36, "renamed": "Ada"}
const { user: { name, langs: [first, ...others], age = 36 } } = input;
const { name: renamed } = input.user;
return { name, first, others, age, renamed };

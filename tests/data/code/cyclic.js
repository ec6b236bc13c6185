// error: fatal
// message-contains: invalid output
// message-contains: cyclic
const a = { name: "a" };
a.self = a;
return a;

// error: fatal
// message-contains: invalid output: the value at key "n" is a BigInt
return { n: 2n ** 64n };

// error: fatal
// message-contains: invalid output: the value at $.n is a BigInt
return { n: 2n ** 64n };

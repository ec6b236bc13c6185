// error: fatal
// message-contains: invalid output: the value at $.o.o.o.o.o.o.o.o…(
// message-contains: is nested deeper than 512 levels
let o = {};
for (let i = 0; i < 10000; i++) o = { o };
return o;

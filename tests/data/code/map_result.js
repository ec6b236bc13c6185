// error: fatal
// message-contains: is a Map
return new Map([["a", 1]]);

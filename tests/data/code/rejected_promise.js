// error: fatal
// message-contains: RangeError: too big
await null;
throw new RangeError("too big");

// error: fatal
// message-contains: invalid output: the value at $.handler is a function
return { ok: true, handler() {} };

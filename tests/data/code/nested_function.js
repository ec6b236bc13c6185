// error: fatal
// message-contains: invalid output: the value at key "handler" is a function
return { ok: true, handler() {} };

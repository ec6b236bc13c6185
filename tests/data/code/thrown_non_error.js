// error: fatal
// message-contains: Uncaught {"code":42}
throw { code: 42 };

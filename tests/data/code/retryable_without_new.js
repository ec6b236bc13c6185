// error: fatal
// message-contains: TypeError
// message-contains: without 'new'
throw Retryable("oops");

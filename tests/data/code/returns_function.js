// error: fatal
// message-contains: invalid output: the result is a function
return () => 1;

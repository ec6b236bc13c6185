// error: fatal
// message-contains: never settled
await new Promise(() => {});
return 1;

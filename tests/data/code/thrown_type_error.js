// error: fatal
// message-contains: TypeError
const missing = null;
return missing.field;

// error: retryable
// message-contains: try later
const e = new Retryable("try later");
if (!(e instanceof Error) || e.name !== "Retryable") return "Retryable should be an Error";
throw e;

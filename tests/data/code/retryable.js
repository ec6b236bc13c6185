// input: {"status": 429}
// error: retryable
// message-contains: rate limited (429)
// retry-after-ms: 1500
if (input.status === 429) throw new Retryable(`rate limited (${input.status})`, { retryAfterMs: 1500 });
return "ok";

// error: retryable
// message-contains: slow down
// retry-after-ms: 250
class RateLimited extends Retryable {
  constructor(what) { super(`slow down: ${what}`, { retryAfterMs: 250 }); this.what = what; }
}
const e = new RateLimited("api");
if (!(e instanceof Retryable) || !(e instanceof Error) || e.what !== "api") return "wrong class";
if (typeof e.stack !== "string") return "no stack";
throw e;

// error: fatal
// message-contains: TypeError: fetch is not available
const res = await fetch("https://example.com/");
return await res.json();

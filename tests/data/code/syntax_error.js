// error: invalid-input
// message-contains: SyntaxError
// message-contains: line 5
const ok = 1;
const broken = ;
return ok;

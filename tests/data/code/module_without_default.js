// error: invalid-input
// message-contains: no default export
export const answer = 42;

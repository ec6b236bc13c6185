// error: invalid-input
// message-contains: SyntaxError
// message-contains: line 5
export default function (input) {
  return input +* 2;
}

// expect: {"constant": true}
export default { constant: true };

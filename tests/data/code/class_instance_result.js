// expect: {"x": 1, "y": 2, "list": [{"x": 3, "y": 4}], "shared": {"a": [1], "b": [1]}}
class Point { constructor(x, y) { this.x = x; this.y = y; } norm() { return Math.hypot(this.x, this.y); } }
const arr = [1];
// Methods live on the prototype, so they are not part of the JSON; the same
// object twice (not a cycle) is fine.
return { ...new Point(1, 2), list: [new Point(3, 4)], shared: { a: arr, b: arr } };

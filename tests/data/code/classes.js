// input: {"w": 3, "h": 4}
// expect: {"area": 12, "kind": "Square-ish Rect", "count": 2, "secret": 42, "isShape": true}
class Shape {
  static count = 0;
  #secret = 42;
  constructor() { Shape.count++; }
  get secret() { return this.#secret; }
  describe() { return "Shape"; }
}
class Rect extends Shape {
  constructor(w, h) { super(); this.w = w; this.h = h; }
  get area() { return this.w * this.h; }
  describe() { return `Square-ish ${super.describe() === "Shape" ? "Rect" : "?"}`; }
}
new Shape();
const r = new Rect(input.w, input.h);
return { area: r.area, kind: r.describe(), count: Shape.count, secret: r.secret, isShape: r instanceof Shape };

// expect: {"nan": null, "arr": [1, null, null], "date": "1970-01-01T00:00:00.000Z", "custom": "custom!"}
return {
  nan: NaN,
  arr: [1, undefined, Infinity],
  dropped: undefined,
  date: new Date(0),
  custom: { toJSON() { return "custom!"; } },
};

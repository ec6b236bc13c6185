// expect: {"n": "18446744073709551616", "small": 42}
return { n: (2n ** 64n).toString(), small: Number(40n + 2n) };

// error: fatal
// message-contains: cannot import "node:fs"
import fs from "node:fs";
export default () => fs;

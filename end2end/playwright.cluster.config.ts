import { defineConfig } from "@playwright/test";
import base from "./playwright.config";

// The specs of several instances behind nginx (scripts/cluster); scripts/test
// starts the cluster and passes nginx's address in BASE_URL.
export default defineConfig({
  ...base,
  testDir: "./cluster",
});

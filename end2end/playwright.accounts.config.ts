import { defineConfig } from "@playwright/test";
import base from "./playwright.config";

// The specs of built-in accounts: scripts/test starts the app with
// STREAMCHAT_ACCESS_MODE=accounts, and passes its address in BASE_URL and
// the setup link it printed in SETUP_LINK. The specs run in file order:
// the first makes the admin.
export default defineConfig({
  ...base,
  testDir: "./accounts",
});

import { test, expect } from "@playwright/test";

test.use({ javaScriptEnabled: false });

test("signing in with a password works without JavaScript and comes back to the page asked for", async ({
  page,
}) => {
  await page.goto("/t/lobby");
  await expect(page).toHaveURL(/\/signin\?next=%2Ft%2Flobby$/);
  await page.getByRole("textbox", { name: "Name" }).fill("Bob");
  await page.getByLabel("Password").fill("wrong horse");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toHaveText("That name and password do not match.");

  await page.getByLabel("Password").fill("bobs password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page).toHaveURL(/\/t\/lobby$/);
  await expect(page.getByRole("heading", { name: "Lobby" })).toBeVisible();
  await expect(page.getByRole("link", { name: "Signed in as Bob" })).toBeVisible();
});

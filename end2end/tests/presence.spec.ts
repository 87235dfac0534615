import { test, expect } from "@playwright/test";
import { createThread, hydrated, uniqueQuestion } from "./helpers";

test("the watcher count goes 1, 2, 1 as a second person comes and goes", async ({ browser }) => {
  const first = await (await browser.newContext()).newPage();
  const path = await createThread(first, uniqueQuestion("Presence"));
  await expect(first.getByText("1 watching")).toBeVisible();

  const secondContext = await browser.newContext();
  const second = await secondContext.newPage();
  await second.goto(path);
  await hydrated(second);
  await expect(first.getByText("2 watching")).toBeVisible();
  await expect(second.getByText("2 watching")).toBeVisible();

  await secondContext.close();
  await expect(first.getByText("1 watching")).toBeVisible();
});

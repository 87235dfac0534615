import { test, expect } from "@playwright/test";
import { hydrated, postDirect, uniqueQuestion } from "./helpers";

test("scrolling up loads older messages in order, without duplicates", async ({ page, request }) => {
  const created = await request.post("/api/create_thread", {
    form: { title: uniqueQuestion("History") },
    headers: { accept: "application/json" },
  });
  const { id } = await created.json();
  const total = 230;
  for (let i = 0; i < total; i++) await postDirect(request, id, "Scribe", `history line ${i}`);

  await page.goto(`/t/${id}`);
  await hydrated(page);
  const messages = page.locator("article.message");
  await expect(messages).toHaveCount(100);
  await expect(messages.last()).toContainText(`history line ${total - 1}`);

  // Scroll to the top until everything is loaded.
  const list = page.getByRole("region", { name: "Conversation" });
  for (const count of [200, total]) {
    await list.evaluate((el) => el.scrollTo(0, 0));
    await expect(messages).toHaveCount(count);
  }
  await expect(page.getByRole("button", { name: "Load older messages" })).toHaveCount(0);
  const texts = await messages.locator(".body").allInnerTexts();
  expect(texts.map((t) => t.trim())).toEqual(Array.from({ length: total }, (_, i) => `history line ${i}`));
});

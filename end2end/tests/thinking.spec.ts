import { test, expect, Locator, Page } from "@playwright/test";
import { createThread, hydrated, postDirect, uniqueQuestion } from "./helpers";

/** The @thinker bot's reply (a reasoning model: the demo thinks aloud first). */
function thinkerReply(page: Page): Locator {
  return page
    .locator("article.message.assistant")
    .filter({ has: page.locator(".author", { hasText: /^thinker$/ }) });
}

test("the thinking is open while it streams, folds when the answer starts, and stays folded after a reload", async ({ page }) => {
  await createThread(page, uniqueQuestion("Thinker"));
  await page.getByRole("textbox", { name: "Name" }).fill("Asker");
  await page.getByRole("textbox", { name: "Message" }).fill(`@thinker ${uniqueQuestion("why is the sky blue")}`);
  await page.getByRole("textbox", { name: "Message" }).press("Enter");

  const reply = thinkerReply(page);
  const thinking = reply.locator("details.thinking");
  const thoughts = thinking.locator(".body");
  const answer = reply.locator(":scope > .body");

  // Open and growing while only the thinking streams.
  await expect(thinking).toHaveAttribute("open", "");
  await expect(thinking.locator("summary")).toHaveText("Thinking…");
  const early = (await thoughts.innerText()).length;
  await expect.poll(async () => (await thoughts.innerText()).length).toBeGreaterThan(early);
  await expect(thinking).toHaveAttribute("open", "");

  // Folded once the answer starts, saying how long it thought.
  await expect(answer).not.toHaveText("");
  await expect(thinking).not.toHaveAttribute("open");
  await expect(thinking.locator("summary")).toHaveText(/^Thought for \d+ s$/);
  await expect(reply).toHaveAttribute("data-status", "streaming");

  // Done: how long it thought; a click opens it.
  await expect(reply).toHaveAttribute("data-status", "done", { timeout: 60_000 });
  await expect(thinking.locator("summary")).toHaveText(/^Thought for \d+ s$/);
  await thinking.locator("summary").click();
  await expect(thinking).toHaveAttribute("open", "");
  await expect(thoughts).toBeVisible();
  const text = await thoughts.textContent();
  expect(text).toContain("reasoning model");

  // After a reload: folded, the same text.
  await page.reload();
  await hydrated(page);
  await expect(thinking).not.toHaveAttribute("open");
  await expect(thinking.locator("summary")).toHaveText(/^Thought for \d+ s$/);
  expect(await thoughts.textContent()).toBe(text);
});

test.describe("without JavaScript", () => {
  test.use({ javaScriptEnabled: false });

  test("a finished reply's thinking is folded and opens on a click", async ({ page, request }) => {
    const created = await request.post("/api/create_thread", {
      form: { title: uniqueQuestion("Thinker, no script") },
      headers: { accept: "application/json" },
    });
    const { id } = await created.json();
    await postDirect(request, id, "NoScript", "@thinker what is a thought?");
    await expect
      .poll(async () => {
        await page.goto(`/t/${id}`);
        return thinkerReply(page).getAttribute("data-status");
      }, { timeout: 60_000 })
      .toBe("done");
    const thinking = thinkerReply(page).locator("details.thinking");
    await expect(thinking).not.toHaveAttribute("open");
    await expect(thinking.locator("summary")).toHaveText(/^Thought for \d+ s$/);
    await thinking.locator("summary").click();
    await expect(thinking.locator(".body")).toBeVisible();
  });
});

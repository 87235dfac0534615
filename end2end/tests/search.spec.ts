import { test, expect } from "@playwright/test";
import { hydrated, postDirect, uniqueQuestion } from "./helpers";

async function newThread(
  request: import("@playwright/test").APIRequestContext,
  title: string,
  unlisted = false,
): Promise<string> {
  const created = await request.post("/api/create_thread", {
    form: unlisted ? { title, unlisted: "true" } : { title },
    headers: { accept: "application/json" },
  });
  return (await created.json()).id;
}

/** A word no other message has. */
function uniqueWord(): string {
  return `w${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

test("a hit opens its thread at the message, loading older history, highlighted", async ({ page, request }) => {
  const title = uniqueQuestion("Searchable");
  const id = await newThread(request, title);
  const word = uniqueWord();
  for (let i = 0; i < 180; i++) {
    const body = i === 7 ? `the <b>${word}</b> is in *here*, line ${i}` : `filler line ${i}`;
    await postDirect(request, id, "Finder", body);
  }

  await page.goto("/");
  await hydrated(page);
  await page.getByRole("searchbox", { name: "Search all threads" }).fill(word.toUpperCase());
  await page.getByRole("searchbox", { name: "Search all threads" }).press("Enter");
  await page.waitForURL(/\/search\?/);

  const hits = page.getByRole("list", { name: "Search results" }).getByRole("listitem");
  await expect(hits).toHaveCount(1);
  const hit = hits.first();
  await expect(hit).toContainText(title);
  await expect(hit).toContainText("Finder");
  await expect(hit.locator("mark")).toHaveText(word);
  // The body's markup is text in the snippet, never elements.
  await expect(hit).toContainText(`<b>${word}</b>`);
  await expect(hit.locator("b")).toHaveCount(0);

  await hit.getByRole("link").click();
  await page.waitForURL(new RegExp(`/t/${id}\\?m=\\d+`));
  await hydrated(page);
  const target = page.locator("article.message").filter({ hasText: `line 7` }).filter({ hasText: word });
  await expect(target).toHaveClass(/highlighted/);
  await expect(target).toBeInViewport();
  // It was older than the first page: history was loaded to reach it.
  expect(await page.locator("article.message").count()).toBeGreaterThan(100);
});

test("an unlisted thread is found only from its own page", async ({ page, request }) => {
  const id = await newThread(request, uniqueQuestion("Hidden"), true);
  const word = uniqueWord();
  await postDirect(request, id, "Quiet", `a secret ${word}`);

  await page.goto(`/search?q=${word}`);
  await expect(page.getByRole("status").filter({ hasText: "found" })).toHaveText("No messages found.");

  await page.goto(`/t/${id}`);
  await hydrated(page);
  await page.getByRole("searchbox", { name: "Search this thread" }).fill(word);
  await page.getByRole("searchbox", { name: "Search this thread" }).press("Enter");
  const hits = page.getByRole("list", { name: "Search results" }).getByRole("listitem");
  await expect(hits).toHaveCount(1);
  await expect(hits.first().locator("mark")).toHaveText(word);
});

test.describe("without JavaScript", () => {
  test.use({ javaScriptEnabled: false });

  test("the search box works as a plain form", async ({ page, request }) => {
    const id = await newThread(request, uniqueQuestion("Plain search"));
    const word = uniqueWord();
    await postDirect(request, id, "NoScript", `found by ${word}`);
    await page.goto("/");
    await page.getByRole("searchbox", { name: "Search all threads" }).fill(word);
    await page.getByRole("button", { name: "Search" }).click();
    const hits = page.getByRole("list", { name: "Search results" }).getByRole("listitem");
    await expect(hits).toHaveCount(1);
    await expect(hits.first().locator("mark")).toHaveText(word);
  });
});

import { test, expect } from "@playwright/test";
import { ask, createThread, replyTo, uniqueQuestion } from "./helpers";

test("a fenced code block renders as code and its Copy button copies it", async ({ browser }) => {
  const context = await browser.newContext();
  await context.grantPermissions(["clipboard-read", "clipboard-write"]);
  const page = await context.newPage();
  await createThread(page, uniqueQuestion("Code"));
  const question = uniqueQuestion("show me code");
  await ask(page, "Coder", question);
  const reply = replyTo(page, question);
  // The demo's answer ends with a fenced `sh` block.
  const code = reply.locator("pre code.language-sh");
  await expect(code).toHaveText("OPENAI_API_KEY=sk-... scripts/run\n", { timeout: 60_000 });
  await expect(reply).toHaveAttribute("data-status", "done", { timeout: 60_000 });
  const copy = reply.getByRole("button", { name: "Copy code" });
  await copy.click();
  await expect(copy).toHaveText("Copied");
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  expect(copied).toBe("OPENAI_API_KEY=sk-... scripts/run\n");
});

test("markup in a reply is inert while streaming and after a reload", async ({ page }) => {
  const dialogs: string[] = [];
  page.on("dialog", (dialog) => {
    dialogs.push(dialog.message());
    void dialog.dismiss();
  });
  await createThread(page, uniqueQuestion("XSS"));
  const payload = "<img src=x onerror=alert(1)> [click me](javascript:alert(2)) <script>alert(3)</script>";
  const question = uniqueQuestion("inert");
  await ask(page, "Mallory", `${question} ${payload}`);
  const reply = replyTo(page, question);

  const checkInert = async () => {
    await expect(reply.locator(".body")).toContainText("<img src=x onerror=alert(1)>");
    await expect(reply.locator(".body")).toContainText("<script>alert(3)</script>");
    await expect(reply.locator(".body")).toContainText("click me");
    expect(await reply.locator(".body img, .body script, .body iframe").count()).toBe(0);
    const hrefs = await reply.locator(".body a").evaluateAll((links) => links.map((a) => a.getAttribute("href") ?? ""));
    expect(hrefs.filter((h) => /^\s*javascript:/i.test(h))).toEqual([]);
  };

  // While it streams (the quoted question comes first)...
  await expect(reply).toHaveAttribute("data-status", "streaming");
  await checkInert();
  await reply.getByText("click me").click();
  // ...and once stored and served again.
  await expect(reply).toHaveAttribute("data-status", "done", { timeout: 60_000 });
  await page.reload();
  await expect(reply).toHaveAttribute("data-status", "done");
  await checkInert();
  // The user's own message is rendered by the same rules.
  const own = page.locator("article.message:not(.assistant)").filter({ hasText: question });
  expect(await own.locator(".body img, .body script").count()).toBe(0);
  expect(dialogs).toEqual([]);
  expect(await page.evaluate(() => (window as any).__xss)).toBeUndefined();
});

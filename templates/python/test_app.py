"""The built plugin on a sample event, as a queue would run it, without
Redis (`switchyard invoke`): the CRM's answer canned, key-value state in
memory. Build it first (see README.md), then: python3 -m unittest"""

import unittest

from switchyard_testing import invoke

PLUGIN = "{{snake}}.wasm"
GRANTS = ["--config", "url=https://crm.example.com/chats", "--allow-host", "https://crm.example.com"]


class PluginTest(unittest.TestCase):
    def test_a_chat_is_sent_counted_and_announced(self) -> None:
        report = invoke(PLUGIN, "chat.ended", "@event.json", *GRANTS, "--http", "@answers.json")
        self.assertEqual(report["outcome"], "success", report)
        self.assertEqual(report["requests"][0]["status"], 201, report)
        self.assertEqual(report["keyvalue"]["chats"]["1001"], "1", report)
        self.assertEqual(report["published"][0]["type"], "crm.synced", report)

    def test_a_crm_outage_is_retried(self) -> None:
        report = invoke(PLUGIN, "chat.ended", "@event.json", *GRANTS, "--http", "@answers-down.json")
        # 503 with Retry-After: 30 s.
        self.assertEqual(report["outcome"], "retry", report)
        self.assertEqual(report["delay_ms"], 30_000, report)
        self.assertEqual(report["published"], [], report)

    def test_a_body_that_is_not_a_chat_is_rejected(self) -> None:
        report = invoke(PLUGIN, "chat.ended", '{"SiteId": 1}', *GRANTS, "--http", "@answers.json")
        self.assertEqual(report["outcome"], "reject", report)
        self.assertIn("ChatGuid", report["reason"], report)


if __name__ == "__main__":
    unittest.main()

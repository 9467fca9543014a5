"""Runs the `python_snippet` of a create reply as a user would paste it, against a stand-in
`molecule_agent` whose signatures are the real SDK's (molecule-ai-sdk 0.2.0), so a call the
SDK would refuse (a missing `handler`) fails here as a TypeError too. Prints what happened."""

import sys
import types


class InboundMessage:
    def __init__(self, text):
        self.activity_id = "activity-1"
        self.source = "canvas_user"
        self.source_id = ""
        self.text = text


class RemoteAgentClient:
    def __init__(self, workspace_id, platform_url, agent_card=None, reported_url="",
                 token_dir=None, heartbeat_interval=30.0, state_poll_interval=10.0,
                 url_cache_ttl=300.0, session=None, org_id="", origin=""):
        print(f"CLIENT {workspace_id} {platform_url}")

    def register(self):
        print("REGISTER")
        return "token"

    def run_agent_loop(self, handler, delivery=None, max_iterations=None, task_supplier=None):
        print(f"REPLY {handler(InboundMessage('hello'), self)}")
        return "paused"


module = types.ModuleType("molecule_agent")
module.RemoteAgentClient = RemoteAgentClient
module.InboundMessage = InboundMessage
sys.modules["molecule_agent"] = module

snippet = open(sys.argv[1]).read()
first = snippet.splitlines()[0]
print("INSTALL" if first.startswith("# pip install ") else f"NO INSTALL LINE: {first}")
exec(compile(snippet, "python_snippet", "exec"), {"__name__": "__main__"})

"""
The ``[state]`` and ``[cluster]`` sections: the Redis URL forms, the timeout,
the cluster name and ``node_id`` (with ``[server] node_id`` as its older alias).
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from warden.config import parse_config_text
from warden.errors import ConfigError


class StateClusterConfigTests(SynchronousTestCase):
    """[state] and [cluster] parse, default and refuse bad values with file and key."""

    def error(self, text: str) -> ConfigError:
        return self.assertRaises(ConfigError, parse_config_text, text, "w.toml")

    def test_defaults(self) -> None:
        """No [state]: in-process state; cluster "default"; node_id the host name."""
        config = parse_config_text("")
        self.assertEqual(config.state.url, "")
        self.assertEqual(config.state.timeout, 1.0)
        self.assertEqual(config.cluster.name, "default")
        self.assertEqual(config.node_id, socket.gethostname())
        self.assertEqual(config.cluster.dialog_token_lifetime, 86400.0)

    def test_values(self) -> None:
        """Both URL forms are accepted; integers are accepted as seconds."""
        config = parse_config_text(
            '[state]\nurl = "redis+sentinel://s1:26379,s2/pbx/1"\ntimeout = 1\n'
            '[cluster]\nname = "hq"\nnode_id = "a"\ndialog_token_lifetime = 60\n'
        )
        self.assertEqual(config.state.timeout, 1.0)
        self.assertEqual(config.cluster.dialog_token_lifetime, 60.0)
        self.assertEqual((config.cluster.name, config.node_id), ("hq", "a"))
        config = parse_config_text('[state]\nurl = "redis://127.0.0.1:6380/2"\n')
        self.assertEqual(config.state.url, "redis://127.0.0.1:6380/2")

    def test_server_node_id_alias(self) -> None:
        """[server] node_id still names the node; the same value in both is fine."""
        self.assertEqual(parse_config_text('[server]\nnode_id = "b"\n').node_id, "b")
        both = '[server]\nnode_id = "b"\n[cluster]\nnode_id = "b"\n'
        self.assertEqual(parse_config_text(both).node_id, "b")

    def test_node_ids_differ(self) -> None:
        """Different [server] and [cluster] node_ids are an error naming the file."""
        error = self.error('[server]\nnode_id = "a"\n[cluster]\nnode_id = "b"\n')
        self.assertEqual(
            str(error),
            'w.toml: cluster.node_id: "b" differs from server.node_id "a";'
            " set only cluster.node_id",
        )

    def test_bad_values(self) -> None:
        """Bad URLs, timeouts, names and node ids name the key and the problem."""
        cases = {
            '[state]\nurl = "http://x"\n': "state.url: must start with redis://",
            '[state]\nurl = "redis://u:pw@x/0"\n': "state.url: must not contain credentials",
            "[state]\nurl = 5\n": "state.url: must be a string, got 5",
            "[state]\ntimeout = 0\n": "state.timeout: must be a number > 0",
            "[state]\nheartbeat_interval = 0.01\n": "state.heartbeat_interval: must be",
            '[cluster]\nname = ""\n': "cluster.name: must be a non-empty string",
            '[cluster]\nname = "a:b"\n': "cluster.name: must be",
            '[cluster]\nnode_id = "a b"\n': "cluster.node_id: must be",
            "[cluster]\nnodes = 2\n": "cluster.nodes: unknown key",
            "[cluster]\ndialog_token_lifetime = 59\n": "cluster.dialog_token_lifetime: must be",
        }
        for text, expected in cases.items():
            message = str(self.error(text))
            self.assertTrue(message.startswith("w.toml: " + expected), message)

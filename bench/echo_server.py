"""The baseline MCP server for bench_mcp: one ``echo`` tool on a bare ``MCPServer`` over stdio."""

from mcp.server.mcpserver import MCPServer

server = MCPServer("echo")


@server.tool()
def echo(text: str = "") -> str:
    """Return ``text``."""
    return text


if __name__ == "__main__":
    server.run()

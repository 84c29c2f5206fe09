"""The app's architecture drawn from its app file: ``rulebus graph`` and the console's
Architecture page.

>>> from rulebus.template import load_app
>>> graph = app_graph(load_app("examples/exchange"))
>>> to_mermaid(graph).splitlines()[0]
'flowchart LR'
"""

from rulebus.graph.mermaid import to_mermaid
from rulebus.graph.model import Edge, Graph, Node, app_graph, could_match
from rulebus.graph.svg import to_svg

__all__ = ["Edge", "Graph", "Node", "app_graph", "could_match", "to_mermaid", "to_svg"]

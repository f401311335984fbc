// A small node-opcua server for tests/opcua/test_node_opcua.py: urn:plant1:bf2 registered after
// another namespace (so it is ns=3), a Float flow and a UInt32 counter that change every 100 ms.
const { OPCUAServer, Variant, DataType, nodesets } = require("node-opcua");
(async () => {
  const port = parseInt(process.argv[2]);
  const server = new OPCUAServer({ port, resourcePath: "/", nodeset_filename: [nodesets.standard] });
  await server.initialize();
  const space = server.engine.addressSpace;
  space.registerNamespace("urn:other:first");
  const ns = space.registerNamespace("urn:plant1:bf2");
  const dev = ns.addObject({ organizedBy: space.rootFolder.objects, browseName: "BF2", nodeId: "s=BF2" });
  let flow = 850.0, count = 0;
  ns.addVariable({ componentOf: dev, browseName: "Flow", nodeId: "s=Utilities.NG.Flow", dataType: "Float",
    value: { get: () => new Variant({ dataType: DataType.Float, value: flow }) } });
  ns.addVariable({ componentOf: dev, browseName: "Pieces", nodeId: "s=Production.Pieces", dataType: "UInt32",
    value: { get: () => new Variant({ dataType: DataType.UInt32, value: count }) } });
  setInterval(() => { flow += 1.0; count += 1; }, 100);
  await server.start();
  console.log("READY opc.tcp://127.0.0.1:" + port + " ns=" + ns.index);
})();

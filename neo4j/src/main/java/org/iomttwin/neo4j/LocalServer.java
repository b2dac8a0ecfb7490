package org.iomttwin.neo4j;

import java.nio.file.Path;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;

/**
 * Runs Neo4j Community embedded with its Bolt connector on a loopback address
 * until the process is stopped.
 *
 * <p>Arguments: {@code DATA_DIR PORT [ADDRESS]}. The address defaults to
 * 127.0.0.1 and must be a loopback address. Prints {@code ready bolt://...}
 * on standard output once Bolt accepts connections. Authentication is off:
 * this server is for tests and benchmarks on one machine.
 */
public final class LocalServer {

    private LocalServer() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 2 || args.length > 3) {
            System.err.println("usage: LocalServer DATA_DIR PORT [ADDRESS]");
            System.exit(2);
        }
        Path data = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);
        String address = args.length == 3 ? args[2] : "127.0.0.1";
        if (!java.net.InetAddress.getByName(address).isLoopbackAddress()) {
            System.err.println("error: Bolt address " + address + " is not a loopback address; this server listens on loopback only");
            System.exit(2);
        }
        DatabaseManagementService service = new DatabaseManagementServiceBuilder(data)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress(address, port))
                .setConfig(GraphDatabaseSettings.auth_enabled, false)
                .build();
        Runtime.getRuntime().addShutdownHook(new Thread(service::shutdown, "neo4j-shutdown"));
        System.out.println("ready bolt://" + address + ":" + port);
        System.out.flush();
        Thread.currentThread().join();
    }
}

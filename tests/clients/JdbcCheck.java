// PostgreSQL JDBC through pgmux with prepareThreshold=1 (a named server-side statement from the
// first execution), in autocommit and in explicit transactions; each thread checks its own
// answers.
//
// usage: java -cp postgresql.jar JdbcCheck.java JDBC_URL USER PASSWORD CLIENTS ROUNDS
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

public class JdbcCheck {
    static int worker(String url, String user, String password, int me, int rounds) throws Exception {
        int checks = 0;
        try (Connection conn = DriverManager.getConnection(url, user, password)) {
            PreparedStatement mul = conn.prepareStatement("SELECT ?::int * 1000 + ?::int");
            PreparedStatement text = conn.prepareStatement("SELECT ?::text || '-' || ?::int");
            for (int r = 0; r < rounds; r++) {
                mul.setInt(1, me);
                mul.setInt(2, r);
                check(mul, String.valueOf(me * 1000 + r));
                text.setString(1, "c" + me);
                text.setInt(2, r);
                check(text, "c" + me + "-" + r);
                conn.setAutoCommit(false);
                mul.setInt(1, me);
                mul.setInt(2, -r);
                check(mul, String.valueOf(me * 1000 - r));
                conn.commit();
                conn.setAutoCommit(true);
                checks += 3;
            }
        }
        return checks;
    }

    static void check(PreparedStatement st, String want) throws Exception {
        try (ResultSet rs = st.executeQuery()) {
            if (!rs.next() || !want.equals(rs.getString(1))) {
                throw new AssertionError("expected " + want);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0], user = args[1], password = args[2];
        int clients = Integer.parseInt(args[3]), rounds = Integer.parseInt(args[4]);
        ExecutorService pool = Executors.newFixedThreadPool(clients);
        List<Future<Integer>> results = new ArrayList<>();
        for (int i = 0; i < clients; i++) {
            final int me = i;
            results.add(pool.submit(() -> worker(url, user, password, me, rounds)));
        }
        int total = 0;
        try {
            for (Future<Integer> f : results) {
                total += f.get();
            }
        } finally {
            // Idle pool threads would keep the JVM alive after a failure.
            pool.shutdownNow();
        }
        System.out.println("pgjdbc: " + total + " checks passed");
    }
}

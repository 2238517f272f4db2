import Foundation
import Testing
import TokendIO

/// The socket request counters in the text exposition format, as Prometheus scrapes them.
@Suite struct MetricsTests {
    @Test func socketRequestCountersKeepTheirNameHelpAndLabels() {
        let metrics = TokendMetrics()
        metrics.requestAnswered(endpoint: "token", status: 200)
        metrics.requestAnswered(endpoint: "token", status: 200)
        metrics.requestAnswered(endpoint: "instances", status: 403)
        let text = String(decoding: metrics.render([], now: Date()), as: UTF8.self)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains("# HELP tokend_socket_requests_total Socket API requests by endpoint and status."))
        #expect(lines.contains("# TYPE tokend_socket_requests_total counter"))
        #expect(lines.contains(#"tokend_socket_requests_total{endpoint="token",status="200"} 2"#))
        #expect(lines.contains(#"tokend_socket_requests_total{endpoint="instances",status="403"} 1"#))
        #expect(lines.filter { $0.hasPrefix("# TYPE tokend_socket_requests_total") }.count == 1)
    }
}

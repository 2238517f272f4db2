import Dispatch
import Foundation
import Logging
import TokendCore
import TokendIO

extension Scheduler {
    /// The exposition text of every instance at `now`: the one rendering behind the socket's `GET /metrics`, the
    /// `[metrics]` listener and the textfile; safe on any thread (it reads the published snapshot).
    func metricsExposition(now: Date) -> [UInt8] {
        metrics.render(published.allInstances(), now: now)
    }
}

/// `[metrics]` at work (SPEC §5): the TCP listener and the node_exporter textfile, both fed by
/// ``Scheduler/metricsExposition(now:)``.
///
/// Made once at start from the start-up settings; a reload that changes `[metrics]` is logged as taking effect at the
/// next start. The textfile is written on a queue of its own (its fsync must not hold the scheduler), first as soon
/// as the instances have started, then every `textfile_interval`; a failure is logged once per distinct error, and
/// the first write after one says so.
final class MetricsExposure: @unchecked Sendable {
    private let listener: MetricsListener?
    private let textfile: MetricsTextfile?
    private let interval: Double
    private let render: @Sendable () -> [UInt8]
    private let logger: Logger
    private let queue = DispatchQueue(label: "tokend.metrics")
    // On `queue`.
    private var timer: (any DaemonTimer)?
    private var lastError: String?
    private var stopped = false

    private init(
        listener: MetricsListener?,
        textfile: MetricsTextfile?,
        interval: Double,
        render: @escaping @Sendable () -> [UInt8],
        logger: Logger
    ) {
        self.listener = listener
        self.textfile = textfile
        self.interval = interval
        self.render = render
        self.logger = logger
    }

    /// Binds the listener, if `[metrics] listen` asks for one (a failure stops the start, as the socket's does).
    static func open(for scheduler: Scheduler) throws -> MetricsExposure {
        let settings = scheduler.settings
        let clock = scheduler.adapters.clock
        let render: @Sendable () -> [UInt8] = { [unowned scheduler] in scheduler.metricsExposition(now: clock.now()) }
        var listener: MetricsListener?
        if let address = settings.metrics.listen {
            let limits = MetricsListener.Limits(requestHeadTimeout: settings.requestHeadTimeout)
            do {
                listener = try Daemon.blocking {
                    try await MetricsListener.bind(host: address.host, port: address.port, limits: limits, render: render)
                }
            } catch {
                throw Daemon.StartError(
                    message: "[metrics] listen \(address): \(error)",
                    errno: (error as? MetricsListener.SetupError)?.errno ?? EIO
                )
            }
            scheduler.logger.info("metrics listening", metadata: ["address": "\(address)"])
        }
        return MetricsExposure(
            listener: listener,
            textfile: settings.metrics.textfile.map(MetricsTextfile.init(path:)),
            interval: settings.metrics.textfileInterval,
            render: render,
            logger: scheduler.logger
        )
    }

    /// Starts writing the textfile, now and then every interval, on the daemon's clock.
    func startTextfile(clock: any DaemonClock) {
        guard textfile != nil else { return }
        queue.sync {
            guard !stopped else { return }
            let timer = clock.makeTimer(on: queue) { [self] in writeTextfile() }
            timer.schedule(after: 0, repeating: interval, leeway: min(1, interval / 10))
            self.timer = timer
        }
    }

    private func writeTextfile() {
        guard let textfile, !stopped else { return }
        do {
            try textfile.write(render())
            if lastError != nil {
                lastError = nil
                logger.info("metrics textfile written again", metadata: ["path": "\(textfile.path)"])
            }
        } catch {
            guard error.description != lastError else { return }
            lastError = error.description
            logger.error(
                "metrics textfile not written; retrying every interval, logged again only if the error changes",
                metadata: ["error": "\(error)", "interval_s": "\(interval)"]
            )
        }
    }

    /// Closes the listener and stops the textfile, which is removed: a stopped tokend leaves no metrics behind that
    /// say its tokens are valid.
    func close() async {
        await listener?.close()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async { [self] in
                stopped = true
                timer?.cancel()
                timer = nil
                if let textfile {
                    do {
                        try textfile.remove()
                    } catch {
                        logger.warning("metrics textfile not removed", metadata: ["error": "\(error)"])
                    }
                }
                continuation.resume()
            }
        }
    }
}

import Synchronization
import TokendCore
import TokendIO

/// Input files in memory, for the daemon's tests: a test writes, replaces or deletes a file, and says whether the
/// watch reports it (inotify) or only the read before the next fetch sees it.
public final class InMemoryInputSource: InputSource, Sendable {
    private struct State {
        var files: [String: String] = [:]
        var watched: Set<String> = []
        var unwatchable: Set<String> = []
        var changed: (@Sendable (String) -> Void)?
        var reads = 0
    }

    private let state = Mutex(State())

    public init(files: [String: String] = [:]) {
        state.withLock { $0.files = files }
    }

    public func path(of source: VariableSource) -> String? {
        switch source {
        case .file(let path): return path
        case .credential(let name): return "/credentials/" + name
        case .literal, .instance: return nil
        }
    }

    public func read(_ source: VariableSource) -> Result<String, ConfigLoader.SecretReadError> {
        guard let path = path(of: source) else { return .failure(.init("not a file")) }
        return state.withLock { state in
            state.reads += 1
            guard let text = state.files[path] else { return .failure(.init("file \(path) does not exist")) }
            return .success(ConfigLoader.trimmingOneNewline(text))
        }
    }

    @discardableResult
    public func watch(_ paths: Set<String>, changed: @escaping @Sendable (String) -> Void) -> Set<String> {
        state.withLock {
            $0.watched = paths.subtracting($0.unwatchable)
            $0.changed = changed
            return paths.intersection($0.unwatchable)
        }
    }

    /// Paths the watch cannot watch (as when inotify is missing or a directory does not exist): the daemon polls them.
    public func makeUnwatchable(_ paths: Set<String>) {
        state.withLock { $0.unwatchable = paths }
    }

    public func stop() {
        state.withLock { $0.changed = nil }
    }

    /// The paths watched now.
    public var watched: Set<String> { state.withLock { $0.watched } }

    /// How many reads there were.
    public var reads: Int { state.withLock { $0.reads } }

    /// Writes `text` to `path` (nil deletes it); with `notify`, the watch reports it as inotify would, if the path
    /// is watched.
    public func set(_ path: String, to text: String?, notify: Bool) {
        let report = state.withLock { state -> (@Sendable (String) -> Void)? in
            state.files[path] = text
            return notify && state.watched.contains(path) ? state.changed : nil
        }
        report?(path)
    }
}

/// Which instances take which other instances' tokens as inputs (`{ instance = … }`, SPEC §11), and the problems
/// that makes: an input no file defines, and cycles.
///
/// Pure: built from the definitions, it answers who waits for whom and who must be refetched when a token changes.
public struct DependencyGraph: Sendable, Hashable {
    /// Instance name to the names of the instances whose tokens it takes.
    public private(set) var inputs: [String: Set<String>] = [:]
    /// Instance name to the names of the instances that take its token.
    public private(set) var dependents: [String: Set<String>] = [:]

    public init() {}

    /// The graph of `definitions` (only those with `{ instance = … }` inputs add to it).
    public init(_ definitions: some Sequence<InstanceDefinition>) {
        for definition in definitions {
            for (_, input) in definition.instanceInputs {
                inputs[definition.name, default: []].insert(input)
                dependents[input, default: []].insert(definition.name)
            }
        }
    }

    public var isEmpty: Bool { inputs.isEmpty }

    /// Every cycle of inputs, each as the names of its instances sorted, the cycles sorted by their first name.
    ///
    /// Strongly connected components with more than one instance (Tarjan's algorithm, iterative); an instance cannot
    /// name itself (the parser refuses it), so a single instance is never a cycle.
    public func cycles() -> [[String]] {
        var index: [String: Int] = [:]
        var lowLink: [String: Int] = [:]
        var onStack: Set<String> = []
        var stack: [String] = []
        var next = 0
        var found: [[String]] = []
        for root in inputs.keys.sorted() where index[root] == nil {
            // Each frame: a node and the inputs still to visit.
            var frames: [(node: String, pending: [String])] = []
            func open(_ node: String) {
                index[node] = next
                lowLink[node] = next
                next += 1
                stack.append(node)
                onStack.insert(node)
                frames.append((node, (inputs[node] ?? []).sorted()))
            }
            open(root)
            while let frame = frames.last {
                if let input = frames[frames.count - 1].pending.popLast() {
                    if index[input] == nil {
                        open(input)
                    } else if onStack.contains(input) {
                        lowLink[frame.node] = min(lowLink[frame.node] ?? 0, index[input] ?? 0)
                    }
                    continue
                }
                frames.removeLast()
                if let parent = frames.last {
                    lowLink[parent.node] = min(lowLink[parent.node] ?? 0, lowLink[frame.node] ?? 0)
                }
                guard lowLink[frame.node] == index[frame.node] else { continue }
                var component: [String] = []
                while let member = stack.popLast() {
                    onStack.remove(member)
                    component.append(member)
                    if member == frame.node { break }
                }
                if component.count > 1 { found.append(component.sorted()) }
            }
        }
        return found.sorted { $0[0] < $1[0] }
    }

    /// `names` with every instance after the instances among them whose tokens it takes, otherwise in the order given.
    public func inputsFirst(_ names: [String]) -> [String] {
        guard !inputs.isEmpty else { return names }
        let wanted = Set(names)
        var placed: Set<String> = []
        var order: [String] = []
        order.reserveCapacity(names.count)
        func place(_ name: String, depth: Int) {
            // A cycle cannot load; the depth bound keeps a graph built from other input finite all the same.
            guard depth < 10_000, placed.insert(name).inserted else { return }
            for input in (inputs[name] ?? []).sorted() where wanted.contains(input) { place(input, depth: depth + 1) }
            order.append(name)
        }
        for name in names { place(name, depth: 0) }
        return order
    }

    /// The instances that take `name`'s token directly or through others, nearest first (each once).
    public func allDependents(of name: String) -> [String] {
        var seen: Set<String> = [name]
        var order: [String] = []
        var frontier = [name]
        while !frontier.isEmpty {
            var nextFrontier: [String] = []
            for node in frontier {
                for dependent in (dependents[node] ?? []).sorted() where seen.insert(dependent).inserted {
                    order.append(dependent)
                    nextFrontier.append(dependent)
                }
            }
            frontier = nextFrontier
        }
        return order
    }
}

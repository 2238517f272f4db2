import Synchronization
import Testing
import TokendCore

@Suite struct ParallelTests {
    @Test(arguments: [0, 1, 64, 65, 1000, 10_007])
    func everyIndexRunsOnceAndResultsKeepTheirOrder(count: Int) {
        let calls = Mutex<[Int: Int]>([:])
        let results = Parallel.map(count) { index -> String in
            calls.withLock { $0[index, default: 0] += 1 }
            return "r\(index)"
        }
        #expect(results == (0..<count).map { "r\($0)" })
        let counted = calls.withLock { $0 }
        #expect(counted.count == count)
        #expect(counted.values.allSatisfy { $0 == 1 })
    }
}

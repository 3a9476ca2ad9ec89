import XCTest
final class PlaceholderLlamaTests: XCTestCase { func testBuilds() {} }

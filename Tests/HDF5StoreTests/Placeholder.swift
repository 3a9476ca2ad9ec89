import XCTest
final class PlaceholderHDF5StoreTests: XCTestCase { func testBuilds() {} }

def fibonacci(n):
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    a, b = 0, 1
    for _ in range(n - 1):
        
    return b


if __name__ == "__main__":
    print(fibonacci(10))

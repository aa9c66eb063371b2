from redis_workbook.datasets import rebuild_shipped

for path in rebuild_shipped():
    print(f"wrote {path}")

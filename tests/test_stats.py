

def test_repeats_needed_agrees_with_the_welch_detectable_change():
    """With unequal SDs Welch's df is below 2n - 2: the repeats asked for must detect the threshold
    with those df, or the report says "3 repeats would detect 20%" beside a 27% detectable change."""
    from llem_bench.stats import minimum_detectable, repeats_needed, welch_df_factor

    sb, sc, mean_base, threshold = 1.0, 8.0, 100.0, 0.2
    factor = welch_df_factor(sb, sc)
    assert 1.0 < factor < 1.1 and welch_df_factor(3.0, 3.0) == 2.0
    pooled = ((sb ** 2 + sc ** 2) / 2) ** 0.5
    n = repeats_needed(pooled, threshold * mean_base, df_factor=factor)
    se = lambda k: (sb ** 2 / k + sc ** 2 / k) ** 0.5  # noqa: E731
    assert minimum_detectable(se(n), factor * (n - 1)) <= threshold * mean_base
    assert minimum_detectable(se(n - 1), factor * (n - 2)) > threshold * mean_base

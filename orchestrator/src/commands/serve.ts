export async function run(_argv: string[]): Promise<number> {
  console.error('serve: not implemented yet');
  return 1;
}
